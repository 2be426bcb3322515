# The Debian package, built by CPack (`cpack -G DEB`, or scripts/package): docs/packaging.md.
# Build it from a tree configured with CMAKE_INSTALL_PREFIX=/usr (scripts/package does), so
# that cmake/Install.cmake and GNUInstallDirs choose Debian's paths.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME dmbyok)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(DMBYOK_PACKAGE_MAINTAINER "dmbyok developers <dev@dmbyok.invalid>" CACHE STRING
  "The Debian package's Maintainer field")
set(CPACK_PACKAGE_CONTACT "${DMBYOK_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${DMBYOK_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "keep data volumes encrypted under a customer-managed KMS key")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
  "dmbyok keeps a Linux host's data volumes encrypted by dm-crypt with a random
data key that is stored only wrapped by the customer's key in a KMS, in a
standard LUKS2 header. When the customer disables or deletes the key, or
withdraws the host's access, the volume can no longer be unlocked; the agent
dmbyokd then locks open volumes without losing a write (freeze, flush, suspend,
key wiped from the kernel) and unlocks them when the key is usable again.
.
This package holds the administration tool dmbyok, the agent dmbyokd with its
systemd unit, the LUKS2 token plugin for cryptsetup, udev rules, the journal
message catalog and the manual pages.")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # dmbyok_<version>_<arch>.deb
# Depends: the shared libraries the binaries link, as dpkg-shlibdeps (dpkg-dev) finds them.
# Nothing else is needed at run time: no other program is executed (hooks and the AWS
# credential_process are the administrator's), and systemd and udev are the host's own.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
# Units and udev rules go to absolute paths (/lib/...): install into the staging directory
# through DESTDIR, with the configured prefix.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
# Maintainer scripts, conffiles, copyright and changelog: written by control.cmake once the
# files are staged (what they say depends on the staged files).
set(CPACK_DMBYOK_PACKAGING_SOURCE_DIR "${PROJECT_SOURCE_DIR}/packaging/debian")
set(CPACK_DMBYOK_PACKAGING_BINARY_DIR "${PROJECT_BINARY_DIR}/packaging/debian")
set(CPACK_DMBYOK_DOCDIR "${CMAKE_INSTALL_FULL_DOCDIR}")
set(CPACK_PRE_BUILD_SCRIPTS "${CPACK_DMBYOK_PACKAGING_SOURCE_DIR}/control.cmake")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  "${CPACK_DMBYOK_PACKAGING_BINARY_DIR}/postinst"
  "${CPACK_DMBYOK_PACKAGING_BINARY_DIR}/prerm"
  "${CPACK_DMBYOK_PACKAGING_BINARY_DIR}/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
