/* Wine 8 (Debian 12's wine64) has no bcryptprimitives.dll, whose ProcessPrng the Rust standard
 * library (1.78 and later) imports on Windows. This stand-in, for the Wine prefix only (never
 * shipped), forwards to advapi32's RtlGenRandom (SystemFunction036), which Wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG len);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
