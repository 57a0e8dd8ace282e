"""Parity with the authors' WeCLIP and WeCLIP+ code: random CLIP and DINOv2 weights, run-time harnesses
around their code, synthetic scenes and the fixture files the parity tests read (see ``docs/parity.md``).

Nothing of the authors' code lives in this package: :mod:`weclip.parity.official` (WeCLIP) and
:mod:`weclip.parity.official_plus` (WeCLIP+, with DINOv2's hub code from a local clone) import it at
run time from a clone the user passes.
"""
