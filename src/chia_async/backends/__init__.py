"""One module per backend, named as in the API reference (``chia.models.<name>`` there is
``chia_async.backends.<name>`` here). Nothing heavy is imported until a backend is used."""
