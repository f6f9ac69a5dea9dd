"""seg2med core: synthetic CT/MR from TotalSegmentator segmentations (no Slicer imports here)."""

__version__ = "0.1.0"
