"""Readers of the offline text sources: each yields (query, positive) pairs from files that Debian
packages install. None of them reads anything outside the package paths it is given."""
