"""Modality fusion plugins (hook ``recplug_fuse``)."""
