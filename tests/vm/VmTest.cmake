# dmbyok_add_vm_test(<name> <script>
#                    [DISKS <size>...] [TIMEOUT <seconds>] [ARGS <run option>...]
#                    [LABELS <label>...])
#
# Registers a CTest test that runs <script> (relative to the calling CMakeLists.txt's
# source directory, or absolute) as root in a QEMU guest through tests/vm/run, with a
# blank virtio disk per DISKS entry (/dev/vda, /dev/vdb, ...). The guest script gets
# DMBYOK_BUILD_DIR and DMBYOK_SOURCE_DIR in its environment and starts in the build
# directory. TIMEOUT (default 300) is the guest's --timeout; CTest's own timeout is a
# minute longer so that the harness reports a hang itself. ARGS go to tests/vm/run as
# they are (e.g. --udev, --systemd, --mem 2048, --env K=V, --qmp auto --host-hook CMD).
# Every such test has the label "vm" plus LABELS, and claims two processors (a TCG guest
# has two vCPUs; scripts/test runs ctest -j4 on two cores: two guests at a time).
include_guard(GLOBAL)

function(dmbyok_add_vm_test name script)
	cmake_parse_arguments(PARSE_ARGV 2 VM "" "TIMEOUT" "DISKS;ARGS;LABELS")
	if(VM_UNPARSED_ARGUMENTS)
		message(FATAL_ERROR "dmbyok_add_vm_test(${name}): unknown arguments ${VM_UNPARSED_ARGUMENTS}")
	endif()
	if(NOT VM_TIMEOUT)
		set(VM_TIMEOUT 300)
	endif()
	if(NOT IS_ABSOLUTE "${script}")
		set(script "${CMAKE_CURRENT_SOURCE_DIR}/${script}")
	endif()
	set(cmd "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/run" "${script}"
		--timeout ${VM_TIMEOUT}
		--env "DMBYOK_BUILD_DIR=${CMAKE_BINARY_DIR}"
		--env "DMBYOK_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
	foreach(size IN LISTS VM_DISKS)
		list(APPEND cmd --disk ${size})
	endforeach()
	list(APPEND cmd ${VM_ARGS})
	math(EXPR ctest_timeout "${VM_TIMEOUT} + 60")
	add_test(NAME ${name} COMMAND ${cmd} WORKING_DIRECTORY "${CMAKE_BINARY_DIR}")
	set_tests_properties(${name} PROPERTIES
		LABELS "vm;${VM_LABELS}"
		TIMEOUT ${ctest_timeout}
		PROCESSORS 2)
endfunction()
