"""`omama-proposals`: FastSAM candidate masks of every destination image, written into
O-MaMa's own files (`ROOT/Masks_{SPLIT}_{DIRECTION}/{take}/{cam}/{frame}_masks.npz` and
`_boxes.npy`), between the dataset root and `omama-precompute`.

The segmenter comes from the optional `ultralytics` package (AGPL-3.0), imported only by
`segmenter`; every other module here, and every other omama stage, works without it.
"""
