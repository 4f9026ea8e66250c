"""Examples of using Lockstep (not installed with it): ``demo.py`` is what scripts/demo runs."""
