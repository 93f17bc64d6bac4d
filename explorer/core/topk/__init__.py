"""What a unit responds to in the user's own images, and the map of the images' codes.

- :mod:`.scan`: one streaming pass over a folder (:func:`~.scan.scan_steps`): every unit's top-k images,
  positions and receptive-field boxes for some layers, and every image's code and prediction
- :mod:`.index`: the index file (its format), where it is cached, how it is read back
- :mod:`.patches`: the patches of a unit's top-k (crops of the preprocessed images, or their
  deconvnet / guided-backprop view), and a grid of them as one picture
- :mod:`.embed`: PCA, then t-SNE, of the codes; trustworthiness and k-NN agreement; snap to grid
"""
