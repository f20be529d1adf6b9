"""The application layer: the ``bridge`` command line (``cli``), the demo (``demo``, ``induction``) and the
plugin template (``new_plugin``). Models come from the kernel's resolution; plugins add demos (``demo`` hook)."""
