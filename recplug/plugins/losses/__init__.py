"""Auxiliary loss plugins (hook ``recplug_aux_loss``)."""
