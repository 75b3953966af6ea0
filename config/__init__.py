"""Default pipeline configuration and rule files, shipped inside the package as `textmill.config`."""
