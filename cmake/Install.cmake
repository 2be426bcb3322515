# Where `cmake --install` puts dmbyok (docs/packaging.md). Configured with
# CMAKE_INSTALL_PREFIX=/usr, as the Debian package is (scripts/package), every path is Debian
# 12's; with another prefix (default /usr/local) everything stays under that prefix:
#   binaries        ${CMAKE_INSTALL_SBINDIR}                   /usr/sbin (src/cli, src/agent)
#   token plugin    ${CMAKE_INSTALL_LIBDIR}/cryptsetup         (src/plugin)
#   systemd units   systemd/*.{service,socket,target,path,timer} -> DMBYOK_SYSTEMD_UNIT_DIR
#   generators      DMBYOK_SYSTEMD_GENERATOR_DIR (for src/plugin's rule)
#   udev rules      udev/*.rules                               -> DMBYOK_UDEV_RULES_DIR
#   journal catalog catalog/*.catalog                          -> DMBYOK_JOURNAL_CATALOG_DIR
#   man pages       man/*.N, gzip -9n                          -> ${CMAKE_INSTALL_MANDIR}/manN
#   documentation   README.md, docs/, etc/*.example, examples/ -> ${CMAKE_INSTALL_DOCDIR}
# Files added to those source directories are picked up without editing this file (the globs
# are re-checked at every build). Included before src/, which may use the directories.

# dmbyok_system_dir(VAR MODULE PC_VARIABLE SUFFIX FALLBACK): the directory systemd or udev
# reads, as their pkg-config files name it (systemd.pc, udev.pc: /lib/systemd/system,
# /lib/udev on Debian 12) when installing to /usr; FALLBACK (relative to the prefix)
# otherwise. Set VAR on the command line to choose another directory.
function(dmbyok_system_dir var module pc_variable suffix fallback)
  set(${var} "" CACHE PATH "Install directory (empty: from ${module}.pc with prefix /usr, else <prefix>/${fallback})")
  if(${var})
    return()
  endif()
  set(dir "${fallback}")
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    pkg_get_variable(pc_dir ${module} ${pc_variable})
    if(pc_dir)
      set(dir "${pc_dir}${suffix}")
    else()
      message(WARNING "${module}.pc has no ${pc_variable}: installing to /usr/${fallback}")
    endif()
  endif()
  set(${var} "${dir}" PARENT_SCOPE)
endfunction()

dmbyok_system_dir(DMBYOK_SYSTEMD_UNIT_DIR systemd systemdsystemunitdir "" lib/systemd/system)
dmbyok_system_dir(DMBYOK_SYSTEMD_GENERATOR_DIR systemd systemdsystemgeneratordir ""
  lib/systemd/system-generators)
dmbyok_system_dir(DMBYOK_UDEV_RULES_DIR udev udevdir /rules.d lib/udev/rules.d)
dmbyok_system_dir(DMBYOK_JOURNAL_CATALOG_DIR systemd catalogdir "" lib/systemd/catalog)

file(GLOB dmbyok_units CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/systemd/*.service ${PROJECT_SOURCE_DIR}/systemd/*.socket
  ${PROJECT_SOURCE_DIR}/systemd/*.target ${PROJECT_SOURCE_DIR}/systemd/*.path
  ${PROJECT_SOURCE_DIR}/systemd/*.timer)
install(FILES ${dmbyok_units} DESTINATION ${DMBYOK_SYSTEMD_UNIT_DIR})
file(GLOB dmbyok_udev_rules CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/udev/*.rules)
install(FILES ${dmbyok_udev_rules} DESTINATION ${DMBYOK_UDEV_RULES_DIR})
# journalctl -x texts; `journalctl --update-catalog` (the package's postinst) compiles them.
file(GLOB dmbyok_catalogs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/catalog/*.catalog)
install(FILES ${dmbyok_catalogs} DESTINATION ${DMBYOK_JOURNAL_CATALOG_DIR})

# Man pages, compressed as Debian policy wants them (gzip -9n: no name, no time stamp, so
# the package is reproducible); man(1) reads them either way. The section is the suffix.
file(GLOB dmbyok_man_pages CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/man/*.[1-9])
set(dmbyok_man_gz)
foreach(page IN LISTS dmbyok_man_pages)
  get_filename_component(name ${page} NAME)
  string(REGEX REPLACE ".*\\.([1-9])$" "\\1" section ${name})
  set(gz ${PROJECT_BINARY_DIR}/man/${name}.gz)
  add_custom_command(OUTPUT ${gz}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
    COMMAND gzip -9n -c ${page} > ${gz}
    DEPENDS ${page} VERBATIM)
  list(APPEND dmbyok_man_gz ${gz})
  install(FILES ${gz} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()
add_custom_target(man-pages ALL DEPENDS ${dmbyok_man_gz})

# Documentation: the README, the design documents, the annotated settings file
# (copy it to /etc/dmbyok/dmbyokd.conf to change a setting) and examples, if any.
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
file(GLOB dmbyok_etc_examples CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/etc/*.example)
install(FILES ${dmbyok_etc_examples} DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples OPTIONAL)
