"""Rented capacity: cloud providers as one more kind of upstream, priced in the same ledger."""
