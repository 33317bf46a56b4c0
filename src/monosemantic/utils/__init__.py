"""Small utilities shared by every stage: errors, atomic files, progress bars, devices and dtypes."""
