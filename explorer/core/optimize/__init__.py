"""Optimisation over the image: class models, unit visualisation, DeepDream, feature inversion.

All of them are gradient steps on the input through one loop (:mod:`.loop`), with the model cut after
the target layer (:mod:`.truncate`). :mod:`.visualize`: Simonyan's class model, Yosinski's regularised
activation maximisation (:mod:`.regularizers`, :mod:`.presets`), Olah's Fourier feature visualisation
(:mod:`.fourier`); :mod:`.dream`: DeepDream; :mod:`.invert`: Mahendran & Vedaldi's inversion.
"""
