"""Seg2MedTraining library: training-set export, the training process with a live loss curve, registration.

Shares the process runner and node helpers of ``Seg2MedLib`` (both module folders are on Slicer's path).
"""
