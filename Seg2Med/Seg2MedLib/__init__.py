"""Seg2Med Slicer module library: plain-Python process runner, MRML logic, and the Qt controller.

Import submodules explicitly (``from Seg2MedLib.process import ProcessRunner``); ``widget`` needs Slicer's
Qt and is only imported by the module widget.
"""
