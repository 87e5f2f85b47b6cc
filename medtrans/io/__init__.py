"""Files in and out: validated volumes in (:mod:`medtrans.io.volumes`), results out, safely
(:mod:`medtrans.io.outputs`)."""

from medtrans.io.outputs import (
    atomic_write,
    atomic_write_many,
    check_outputs,
    check_writable,
    nifti_like,
    remove_stale_partials,
    write_volume,
    write_volumes,
)
from medtrans.io.volumes import (
    NIFTI_SUFFIXES,
    Volume,
    check_input,
    check_same_grid,
    is_dicom_dir,
    is_nifti,
    list_folder,
    read_mask,
    read_volume,
)

__all__ = ["NIFTI_SUFFIXES", "Volume", "atomic_write", "atomic_write_many", "check_input", "check_outputs",
           "check_same_grid", "check_writable", "is_dicom_dir", "is_nifti", "list_folder", "nifti_like", "read_mask", "read_volume",
           "remove_stale_partials", "write_volume", "write_volumes"]
