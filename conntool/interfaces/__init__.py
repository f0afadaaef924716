"""Thin nipype interfaces: traits in, one call into ``conntool.steps``, files out."""
