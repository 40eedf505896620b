"""capture/: where frames come from (Pi camera, file, stream, V4L2) and how they become H.264
packets, pre-roll, fragmented MP4 clips and snapshots."""
