"""Where a trial's images come from: the shipped sets, ``.npz`` files, image folders and
TensorFlow Datasets, and the node's store of decoded images.

- :mod:`nas.data.sources`: ``data.source`` names, their checks and :func:`~nas.data.sources.load`;
- :mod:`nas.data.stored`: folders and arrays read through the store as training needs them;
- :mod:`nas.data.imagestore`: the node-local store of decoded images;
- :mod:`nas.data.tfds`: ``tfds:NAME`` sources.

Adding a data source: a class like :class:`~nas.data.stored.FolderItems` (the items of one
split) and a branch in :func:`~nas.data.sources.load`.

May import: :mod:`nas.core`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "check_source": "nas.data.sources",
    "class_count": "nas.data.sources",
    "load": "nas.data.sources",
    "ImageStore": "nas.data.imagestore",
    "StoreSettings": "nas.data.imagestore",
})
