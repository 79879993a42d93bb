"""Metrics of generated samples: Fréchet distance / FID / KID (``fid``, ``frechet``, ``features``),
Wasserstein estimates (``wasserstein``) and mixture mode statistics (``modes``)."""
