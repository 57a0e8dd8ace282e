"""Parity with the authors' WeCLIP and WeCLIP+ code: random CLIP and DINOv2 weights, run-time harnesses
around their code, synthetic scenes and the fixture files the parity tests read (see ``docs/parity.md``).

Nothing of the authors' code lives in this package: :mod:`weclip.parity.official` (WeCLIP) and
:mod:`weclip.parity.official_plus` (WeCLIP+, with DINOv2's hub code from a local clone) import it at
run time from a clone the user passes. :mod:`weclip.parity.record` (WeCLIP) and
:mod:`weclip.parity.record_plus` (WeCLIP+) record their stages as fixture arrays,
:mod:`weclip.parity.manifest` writes a fixture folder and its ``manifest.json``
(``tools/parity/record_official.py`` is the command line); :mod:`weclip.parity.normalize` is their input
normalisation.
"""
