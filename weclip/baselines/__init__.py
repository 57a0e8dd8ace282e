"""Baselines beside WeCLIP (issues 18-19)."""
