"""Xen's split-driver side: xenbus states and device handshakes, shared rings, the console backend."""
