"""Store adapters: what a request asks of a store, and how to answer in that store's terms."""
