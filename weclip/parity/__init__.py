"""Parity with the authors' WeCLIP code: random CLIP weights, a run-time harness around their code,
synthetic scenes and the fixture files the parity tests read (see ``docs/parity.md``).

Nothing of the authors' code lives in this package: :mod:`weclip.parity.official` imports it at run
time from a clone the user passes.
"""
