"""Named pipeline presets (YAML). Shipped as package data ``conntool.pipelines``."""
