"""Development tools of the repository (not part of any plugin): `sync-docs`, which writes the
generated documents (`make docs`). They may import the plugins and the sandboxes; nothing the
plugins or `sync_common` run imports them."""
