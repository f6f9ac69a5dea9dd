"""Template phantoms: new anatomies made by deforming real TotalSegmentator label maps shipped in ``data/``.

``template.make_template_phantom`` builds a phantom; ``anatomy`` measures and checks it; ``xcat`` imports
XCAT label volumes. The templates and their licences/credits are in ``data/`` (see ``data/CREDITS.md``).
"""

from .template import REGIONS, TEMPLATE_CREDITS, make_template_phantom, template_segmentation

__all__ = ["REGIONS", "TEMPLATE_CREDITS", "make_template_phantom", "template_segmentation"]
