"""Files in and out: validated volumes (:mod:`medtrans.io.volumes`) and safe outputs (:mod:`medtrans.io.outputs`)."""

from medtrans.io.outputs import atomic_write, atomic_write_many, check_outputs, check_writable, remove_stale_partials
from medtrans.io.volumes import (
    NIFTI_SUFFIXES,
    Volume,
    check_input,
    is_dicom_dir,
    is_nifti,
    list_folder,
    nifti_like,
    read_mask,
    read_volume,
    write_volume,
    write_volumes,
)

__all__ = ["NIFTI_SUFFIXES", "Volume", "atomic_write", "atomic_write_many", "check_input", "check_outputs",
           "check_writable", "is_dicom_dir", "is_nifti", "list_folder", "nifti_like", "read_mask", "read_volume",
           "remove_stale_partials", "write_volume", "write_volumes"]
