#!/bin/bash -e
# pi-gen, inside the image with its own python3: the same `doorstep install` an installer runs
# on a Pi (the release venv over apt's numpy and picamera2, the user, directories and units),
# plus --image: the machine-id reset and no SSH host keys, so that every card flashed from the
# image makes its own at first boot (doorstep-identity.service). apt was done by 00-apt and
# 01-rpi-apt, so --no-apt: a missing package fails the build instead of being fetched here.
# DOORSTEP_TARGET is "pi" for Raspberry Pi OS (the test in a Debian 12 root sets "generic").
wheel=$(ls /tmp/doorstep-install/doorstep-*-py3-none-any.whl)
PYTHONPATH="$wheel" python3 -m doorstep install --wheel "$wheel" \
	--target "${DOORSTEP_TARGET:-pi}" --no-apt --image
rm -rf /tmp/doorstep-install
