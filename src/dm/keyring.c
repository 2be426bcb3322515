/* SPDX-License-Identifier: Apache-2.0 */
#include <keyutils.h>

#include "dmbyok/dm.h"
#include "dmbyok/log.h"

int dmbyok_keyring_add_logon_key(const char *description, const struct secret *key,
                                 int32_t *ret_serial)
{
	key_serial_t serial;

	/*
	 * "logon" keys cannot be read back from user space, only used by the kernel; the thread
	 * keyring is searched by dm-crypt's request_key() from this same thread.
	 */
	serial = add_key("logon", description, key->data, key->size, KEY_SPEC_THREAD_KEYRING);
	if (serial < 0) {
		if (errno == ENOSYS || errno == EOPNOTSUPP)
			return log_error_errno(ENOTSUP, "The kernel keyring is not available: %m");
		return log_error_errno(errno,
		                       "Cannot add the volume key to the kernel keyring: %m");
	}
	*ret_serial = serial;
	return 0;
}

void dmbyok_keyring_destroy_key(int32_t serial)
{
	if (serial <= 0)
		return;
	/* Invalidation destroys the payload at once, whoever else still links the key. */
	if (keyctl_invalidate(serial) < 0)
		(void)keyctl_unlink(serial, KEY_SPEC_THREAD_KEYRING);
}
