"""xentool: a Xen toolstack in Python."""
