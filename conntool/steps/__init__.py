"""The science, as plain functions on arrays and nibabel images (no nipype, no click)."""
