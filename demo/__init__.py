"""The demo shop: small, real services in several runtimes that Guardian watches (see README.md)."""
