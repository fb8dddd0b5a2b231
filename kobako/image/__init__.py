"""Images: content store, manifests, image records, registry client, archives."""
