"""The bottom wing: files in and out.

``models`` loads Keras models (archives checked first) and saves them,
``files`` writes atomically, ``arrays`` reads ``.npy``/``.npz`` data,
``images`` reads image folders, ``sources`` picks between them, ``signature``
names a model's inputs and outputs, ``custom_objects`` imports user code on
request. Nothing here imports another wing.
"""
