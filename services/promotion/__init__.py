"""The promotion service: what runs where, and what may go where next."""
