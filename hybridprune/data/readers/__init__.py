"""Dataset readers, one file per format, registered in :data:`FORMATS` (timm's ``data/readers``).

- :mod:`~hybridprune.data.readers.cifar`: ``cifar10``, ``cifar100`` (python pickle batches).
- :mod:`~hybridprune.data.readers.image_folder`: ``image_folder``.
- :mod:`~hybridprune.data.readers.digits`: ``digits`` (scikit-learn, no files).
"""

from hybridprune.data.readers import cifar as _cifar  # noqa: F401  (registers cifar10, cifar100)
from hybridprune.data.readers import digits as _digits  # noqa: F401  (registers digits)
from hybridprune.data.readers import image_folder as _image_folder  # noqa: F401  (registers image_folder)
from hybridprune.data.readers.base import FORMATS, DatasetFormat, RawDataset, get_format

__all__ = ["FORMATS", "DatasetFormat", "RawDataset", "get_format"]
