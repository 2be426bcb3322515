# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS, cmake/Packaging.cmake): runs once the
# package's files are staged in CPACK_TEMPORARY_DIRECTORY and writes what depends on them:
#  - the maintainer scripts, from packaging/debian/*.in, with the units to enable: every
#    staged systemd unit that has an [Install] section (templates excepted);
#  - conffiles: every file staged under /etc (dpkg keeps an administrator's changes to them);
#  - Debian's copyright file and changelog in the package's doc directory.
set(root "${CPACK_TEMPORARY_DIRECTORY}")
set(src "${CPACK_DMBYOK_PACKAGING_SOURCE_DIR}")
set(out "${CPACK_DMBYOK_PACKAGING_BINARY_DIR}")
if(NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "dmbyok's Debian package must be built from a tree configured with "
    "-DCMAKE_INSTALL_PREFIX=/usr (this one has ${CPACK_PACKAGING_INSTALL_PREFIX}): use scripts/package")
endif()

set(units)
file(GLOB_RECURSE unit_files LIST_DIRECTORIES false RELATIVE "${root}"
  "${root}/*/systemd/system/*")
foreach(path IN LISTS unit_files)
  get_filename_component(unit "${path}" NAME)
  if(NOT unit MATCHES "\\.(service|socket|timer|path|target)$" OR unit MATCHES "@\\.")
    continue()
  endif()
  file(STRINGS "${root}/${path}" lines)
  set(in_install FALSE)
  foreach(line IN LISTS lines)
    if(line MATCHES "^\\[")
      set(in_install FALSE)
      if(line MATCHES "^\\[Install\\]")
        set(in_install TRUE)
      endif()
    elseif(in_install AND line MATCHES "^(WantedBy|RequiredBy|Also|Alias)=")
      list(APPEND units "${unit}")
      break()
    endif()
  endforeach()
endforeach()
list(REMOVE_DUPLICATES units)
list(SORT units)
list(JOIN units " " DMBYOK_UNITS)
message(STATUS "dmbyok package: units enabled and started by the postinst: ${DMBYOK_UNITS}")

file(MAKE_DIRECTORY "${out}")
foreach(script postinst prerm postrm)
  configure_file("${src}/${script}.in" "${out}/${script}" @ONLY)
endforeach()

# conffiles: only listed when there is one (the control archive then holds the file).
file(GLOB_RECURSE etc_files LIST_DIRECTORIES false RELATIVE "${root}" "${root}/etc/*")
list(SORT etc_files)
file(REMOVE "${out}/conffiles")
if(etc_files)
  list(TRANSFORM etc_files PREPEND "/")
  list(JOIN etc_files "\n" conffiles)
  file(WRITE "${out}/conffiles" "${conffiles}\n")
  list(APPEND CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${out}/conffiles")
  message(STATUS "dmbyok package: conffiles ${etc_files}")
endif()

# /usr/share/doc/dmbyok/copyright and changelog.gz (a native package's), as Debian requires.
set(doc "${root}${CPACK_DMBYOK_DOCDIR}")
file(MAKE_DIRECTORY "${doc}")
file(COPY "${src}/copyright" DESTINATION "${doc}")
string(TIMESTAMP date "%a, %d %b %Y %H:%M:%S +0000" UTC) # SOURCE_DATE_EPOCH if set
file(WRITE "${out}/changelog" "dmbyok (${CPACK_PACKAGE_VERSION}) unstable; urgency=medium

  * Built from the dmbyok source tree by CPack (scripts/package).

 -- ${CPACK_DEBIAN_PACKAGE_MAINTAINER}  ${date}
")
execute_process(COMMAND gzip -9n -c "${out}/changelog" OUTPUT_FILE "${doc}/changelog.gz"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip of the changelog failed")
endif()
