"""One module per kobako-runtime verb, imported only when that verb runs."""
