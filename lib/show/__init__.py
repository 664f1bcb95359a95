"""Figures, tables and widgets (imports only lib.core)."""
