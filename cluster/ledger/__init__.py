"""What every token cost: the usage rows, their SQLite store, energy, prices, cost and reports."""
