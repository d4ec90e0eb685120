"""Sluice HTTP layer: the BlackSheep application and its route modules."""
