"""Graph encoder plugins (hook ``recplug_encode``)."""
