"""runbox: a container runtime written from scratch, taught in stages."""
