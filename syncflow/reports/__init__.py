"""Reports over what the syncs stored (capacity growth, change lists)."""
