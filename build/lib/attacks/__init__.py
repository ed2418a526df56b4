"""Attacks that try to restore or detect a forgotten class. They never import the judge."""
