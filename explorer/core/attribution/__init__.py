"""Attribution: which input pixels matter to a class score or to a unit.

``occlusion`` (Zeiler & Fergus; exact incremental evaluation in ``incremental``), ``backprop`` (gradient,
deconvnet, guided backprop by their ReLU backward rules), ``gradcam`` (Grad-CAM, guided Grad-CAM),
``target`` (what is explained), ``methods`` (one entry point for the command line and the GUI).
"""
