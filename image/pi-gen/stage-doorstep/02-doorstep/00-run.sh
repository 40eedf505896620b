#!/bin/bash -e
# pi-gen, on the build host: hand Doorstep's wheel to the chroot step. `make image-stage` puts
# exactly one doorstep-<version>-py3-none-any.whl in files/.
shopt -s nullglob
wheels=(files/doorstep-*-py3-none-any.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
	echo "stage-doorstep: need exactly one files/doorstep-*-py3-none-any.whl (make image-stage)" >&2
	exit 1
fi
install -d -m 0755 "${ROOTFS_DIR}/tmp/doorstep-install"
install -m 0644 "${wheels[0]}" "${ROOTFS_DIR}/tmp/doorstep-install/"
