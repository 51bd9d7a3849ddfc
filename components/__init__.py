"""FlatcarMicroCloud components: one ComponentResource per file."""
