"""The cffi description of the parts of Xen's C libraries that xentool calls.

API mode: the extension is compiled against the installed headers (Debian's libxen-dev, Xen 4.17),
so struct layouts and constants come from the real headers (``...;`` below) and a header that
disagrees with this file fails the build instead of corrupting memory at run time.

``compile_bindings()`` writes ``hypercalls/xen/_xenlibs*.so`` next to this file.  It is meant to run
on the host (``make venv`` does it, or ``python -m hypercalls.xen.build``): the lab's dom0 sees the
host's filesystem read-only and finds the compiled module there.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODULE = "hypercalls.xen._xenlibs"
PACKAGE_DIR = Path(__file__).resolve().parent

LIBRARIES = [
    "xenctrl",
    "xenguest",
    "xenstore",
    "xenevtchn",
    "xengnttab",
    "xenforeignmemory",
    "xendevicemodel",
    "xentoollog",
]

HEADERS = [
    "xenctrl.h",
    "xenguest.h",
    "xenstore.h",
    "xenevtchn.h",
    "xengnttab.h",
    "xenforeignmemory.h",
    "xendevicemodel.h",
    "xentoollog.h",
]

# Which Debian package brings what the build or the loaded module needs.
DEBIAN_PACKAGE_OF_LIBRARY = {
    "xenctrl": "libxenmisc4.17",
    "xenguest": "libxenmisc4.17",
    "xenstore": "libxenstore4",
    "xenevtchn": "libxenevtchn1",
    "xengnttab": "libxengnttab1",
    "xenforeignmemory": "libxenforeignmemory1",
    "xendevicemodel": "libxendevicemodel1",
    "xentoollog": "libxentoollog1",
    "xencall": "libxencall1",
    "xentoolcore": "libxentoolcore1",
}

SOURCE = r"""
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <xentoollog.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenstore.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenforeignmemory.h>
#include <xendevicemodel.h>
#include <xen/hvm/params.h>
#include <xen/hvm/hvm_info_table.h>
#include <xen/hvm/e820.h>

/*
 * A xentoollog logger that keeps the last error message instead of printing it, so that a failing
 * libxc/libxenguest call can be reported once, inside the XenError, rather than on stderr.
 */
struct xentool_logger {
    struct xentoollog_logger vtable;
    char last[1024];
    int last_errno;
};

static void xentool_logger_vmessage(struct xentoollog_logger *logger, xentoollog_level level,
                                    int errnoval, const char *context, const char *format,
                                    va_list al)
{
    struct xentool_logger *lg = (struct xentool_logger *)logger;
    if (level < XTL_ERROR)
        return;
    vsnprintf(lg->last, sizeof(lg->last), format, al);
    lg->last_errno = errnoval;
}

/* Defined by cffi below (extern "Python"): hands libxenguest's progress to the Python caller. */
static void xentool_progress(const char *doing_what, int percent, unsigned long done, unsigned long total);

static void xentool_logger_progress(struct xentoollog_logger *logger, const char *context,
                                    const char *doing_what, int percent,
                                    unsigned long done, unsigned long total)
{
    xentool_progress(doing_what ? doing_what : "", percent, done, total);
}

static void xentool_logger_destroy(struct xentoollog_logger *logger)
{
    free(logger);
}

static struct xentoollog_logger *xentool_logger_new(void)
{
    struct xentool_logger *lg = calloc(1, sizeof(*lg));
    if (!lg)
        return NULL;
    lg->vtable.vmessage = xentool_logger_vmessage;
    lg->vtable.progress = xentool_logger_progress;
    lg->vtable.destroy = xentool_logger_destroy;
    return &lg->vtable;
}

static const char *xentool_logger_last(struct xentoollog_logger *logger)
{
    return ((struct xentool_logger *)logger)->last;
}

static void xentool_logger_clear(struct xentoollog_logger *logger)
{
    struct xentool_logger *lg = (struct xentool_logger *)logger;
    lg->last[0] = '\0';
    lg->last_errno = 0;
}

/* xc_dom_p2m is a static inline in xenguest.h: give cffi a real function to call. */
static xen_pfn_t xentool_dom_p2m(struct xc_dom_image *dom, xen_pfn_t pfn)
{
    return xc_dom_p2m(dom, pfn);
}

static int xentool_dom_set_container(struct xc_dom_image *dom, int hvm)
{
    dom->container_type = hvm ? XC_DOM_HVM_CONTAINER : XC_DOM_PV_CONTAINER;
    return 0;
}

static unsigned int xentool_dom_page_shift(struct xc_dom_image *dom)
{
    return XC_DOM_PAGE_SHIFT(dom);
}

static int xentool_dom_set_e820(struct xc_dom_image *dom, const struct e820entry *entries,
                                unsigned int n)
{
    struct e820entry *copy = xc_dom_malloc(dom, sizeof(*copy) * n);
    if (!copy)
        return -1;
    memcpy(copy, entries, sizeof(*copy) * n);
    dom->e820 = copy;
    dom->e820_entries = n;
    return 0;
}
"""

CDEF = r"""
/* ---- libc ---- */
void free(void *ptr);
int munmap(void *addr, size_t length);
#define PROT_READ ...
#define PROT_WRITE ...

/* ---- xentoollog ---- */
typedef struct xentoollog_logger xentoollog_logger;
void xtl_logger_destroy(struct xentoollog_logger *logger);
struct xentoollog_logger *xentool_logger_new(void);
const char *xentool_logger_last(struct xentoollog_logger *logger);
void xentool_logger_clear(struct xentoollog_logger *logger);

/* ---- public headers: types and constants ---- */
typedef uint64_t xen_pfn_t;
typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
typedef uint8_t xen_domain_handle_t[16];
typedef char xen_extraversion_t[16];
typedef char xen_capabilities_info_t[1024];

#define XENVER_version ...
#define XENVER_extraversion ...
#define XENVER_capabilities ...

#define XEN_DOMCTL_CDF_hvm ...
#define XEN_DOMCTL_CDF_hap ...
#define XEN_DOMCTL_CDF_oos_off ...
#define XEN_DOMCTL_CDF_nested_virt ...
#define XEN_DOMCTL_GRANT_version_mask ...

#define XEN_X86_EMU_LAPIC ...
#define XEN_X86_EMU_ALL ...
#define XEN_X86_EMU_VPCI ...
#define XEN_X86_EMU_USE_PIRQ ...

#define XEN_DOMINF_dying ...
#define XEN_DOMINF_hvm_guest ...
#define XEN_DOMINF_shutdown ...
#define XEN_DOMINF_paused ...
#define XEN_DOMINF_blocked ...
#define XEN_DOMINF_running ...
#define XEN_DOMINF_hap ...
#define XEN_DOMINF_shutdownmask ...
#define XEN_DOMINF_shutdownshift ...

#define XEN_SYSCTL_PHYSCAP_hvm ...
#define XEN_SYSCTL_PHYSCAP_pv ...
#define XEN_SYSCTL_PHYSCAP_hap ...
#define XEN_SYSCTL_PHYSCAP_shadow ...
#define XEN_SYSCTL_PHYSCAP_gnttab_v1 ...
#define XEN_SYSCTL_PHYSCAP_gnttab_v2 ...

#define XEN_VCPUAFFINITY_HARD ...
#define XEN_VCPUAFFINITY_SOFT ...

#define EVTCHNSTAT_closed ...
#define EVTCHNSTAT_unbound ...
#define EVTCHNSTAT_interdomain ...

#define HVM_PARAM_STORE_PFN ...
#define HVM_PARAM_STORE_EVTCHN ...
#define HVM_PARAM_CONSOLE_PFN ...
#define HVM_PARAM_CONSOLE_EVTCHN ...
#define HVM_PARAM_TIMER_MODE ...
#define HVM_PARAM_ALTP2M ...
#define HVM_PARAM_HPET_ENABLED ...
#define HVM_PARAM_VPT_ALIGN ...
#define HVM_PARAM_VIRIDIAN ...
#define HVM_PARAM_CALLBACK_IRQ ...
#define HVMPV_base_freq ...
#define HVMPV_no_freq ...
#define HVMPV_time_ref_count ...
#define HVMPV_reference_tsc ...
#define HVMPV_hcall_remote_tlb_flush ...
#define HVMPV_apic_assist ...
#define HVMPV_crash_ctl ...
#define HVMPV_synic ...
#define HVMPV_stimer ...
#define HVMPV_hcall_ipi ...
#define HVMPV_ex_processor_masks ...
#define HVMPV_no_vp_limit ...
#define HVMPV_cpu_hotplug ...
#define HVM_BELOW_4G_MMIO_LENGTH ...
#define HVM_INFO_PFN ...
#define HVM_INFO_OFFSET ...
#define HVM_MAX_VCPUS ...
#define XEN_DOMCTL_SENDTRIGGER_POWER ...

struct hvm_info_table {
    char signature[8];
    uint32_t length;
    uint8_t checksum;
    uint8_t apic_mode;
    uint32_t nr_vcpus;
    uint32_t low_mem_pgend;
    uint32_t reserved_mem_pgstart;
    uint32_t high_mem_pgend;
    uint8_t vcpu_online[...];
    ...;
};
#define HVMPTM_no_delay_for_missed_ticks ...

#define E820_RAM ...
#define E820_RESERVED ...
#define E820_ACPI ...
#define X86_HVM_NR_SPECIAL_PAGES ...
#define X86_HVM_END_SPECIAL_REGION ...
#define MAX_ACPI_MODULES ...

struct xen_arch_domainconfig {
    uint32_t emulation_flags;
    uint32_t misc_flags;
    ...;
};

struct xen_domctl_createdomain {
    uint32_t ssidref;
    xen_domain_handle_t handle;
    uint32_t flags;
    uint32_t iommu_opts;
    uint32_t max_vcpus;
    uint32_t max_evtchn_port;
    int32_t max_grant_frames;
    int32_t max_maptrack_frames;
    uint32_t grant_opts;
    uint32_t vmtrace_size;
    uint32_t cpupool_id;
    struct xen_arch_domainconfig arch;
    ...;
};

struct xen_domctl_getdomaininfo {
    domid_t domain;
    uint32_t flags;
    uint64_t tot_pages;
    uint64_t max_pages;
    uint64_t outstanding_pages;
    uint64_t shr_pages;
    uint64_t paged_pages;
    uint64_t shared_info_frame;
    uint64_t cpu_time;
    uint32_t nr_online_vcpus;
    uint32_t max_vcpu_id;
    uint32_t ssidref;
    xen_domain_handle_t handle;
    uint32_t cpupool;
    struct xen_arch_domainconfig arch_config;
    ...;
};
typedef struct xen_domctl_getdomaininfo xc_domaininfo_t;

struct xen_sysctl_physinfo {
    uint32_t threads_per_core;
    uint32_t cores_per_socket;
    uint32_t nr_cpus;
    uint32_t max_cpu_id;
    uint32_t nr_nodes;
    uint32_t max_node_id;
    uint32_t cpu_khz;
    uint32_t capabilities;
    uint32_t arch_capabilities;
    uint64_t total_pages;
    uint64_t free_pages;
    uint64_t scrub_pages;
    uint64_t outstanding_pages;
    uint64_t max_mfn;
    ...;
};
typedef struct xen_sysctl_physinfo xc_physinfo_t;

struct evtchn_status {
    domid_t dom;
    evtchn_port_t port;
    uint32_t status;
    uint32_t vcpu;
    ...;
};
typedef struct evtchn_status xc_evtchn_status_t;

struct e820entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    ...;
};

/* ---- libxenctrl ---- */
typedef struct xc_interface_core xc_interface;
typedef uint8_t *xc_cpumap_t;
typedef int xc_evtchn_port_or_error_t;

xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger,
                                unsigned open_flags);
int xc_interface_close(xc_interface *xch);

int xc_version(xc_interface *xch, int cmd, void *arg);
int xc_physinfo(xc_interface *xch, xc_physinfo_t *info);
int xc_readconsolering(xc_interface *xch, char *buffer, unsigned int *pnr_chars,
                       int clear, int incremental, uint32_t *pindex);

int xc_domain_create(xc_interface *xch, uint32_t *pdomid, struct xen_domctl_createdomain *config);
int xc_domain_max_vcpus(xc_interface *xch, uint32_t domid, unsigned int max);
int xc_domain_destroy(xc_interface *xch, uint32_t domid);
int xc_domain_dumpcore(xc_interface *xch, uint32_t domid, const char *corename);
int xc_domain_pause(xc_interface *xch, uint32_t domid);
int xc_domain_unpause(xc_interface *xch, uint32_t domid);
int xc_domain_send_trigger(xc_interface *xch, uint32_t domid, uint32_t trigger, uint32_t vcpu);
int xc_domain_shutdown(xc_interface *xch, uint32_t domid, int reason);
int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains,
                          xc_domaininfo_t *info);
int xc_domain_setmaxmem(xc_interface *xch, uint32_t domid, uint64_t max_memkb);
int xc_domain_set_memmap_limit(xc_interface *xch, uint32_t domid, unsigned long map_limitkb);
int xc_domain_set_memory_map(xc_interface *xch, uint32_t domid, struct e820entry entries[],
                             uint32_t nr_entries);
int xc_domain_set_tsc_info(xc_interface *xch, uint32_t domid, uint32_t tsc_mode,
                           uint64_t elapsed_nsec, uint32_t gtsc_khz, uint32_t incarnation);
int xc_domain_set_pod_target(xc_interface *xch, uint32_t domid, uint64_t target_pages,
                             uint64_t *tot_pages, uint64_t *pod_cache_pages, uint64_t *pod_entries);
int xc_set_paging_mempool_size(xc_interface *xch, uint32_t domid, uint64_t size);
int xc_get_paging_mempool_size(xc_interface *xch, uint32_t domid, uint64_t *size);

int xc_get_max_cpus(xc_interface *xch);
int xc_get_cpumap_size(xc_interface *xch);
xc_cpumap_t xc_cpumap_alloc(xc_interface *xch);
void xc_cpumap_setcpu(int cpu, xc_cpumap_t map);
int xc_vcpu_setaffinity(xc_interface *xch, uint32_t domid, int vcpu, xc_cpumap_t cpumap_hard_inout,
                        xc_cpumap_t cpumap_soft_inout, uint32_t flags);
int xc_vcpu_getaffinity(xc_interface *xch, uint32_t domid, int vcpu, xc_cpumap_t cpumap_hard,
                        xc_cpumap_t cpumap_soft, uint32_t flags);
int xc_cpumap_testcpu(int cpu, xc_cpumap_t map);

struct xen_domctl_getvcpuinfo {
    uint32_t vcpu;
    uint8_t online;
    uint8_t blocked;
    uint8_t running;
    uint64_t cpu_time;
    uint32_t cpu;
    ...;
};
typedef struct xen_domctl_getvcpuinfo xc_vcpuinfo_t;
int xc_vcpu_getinfo(xc_interface *xch, uint32_t domid, uint32_t vcpu, xc_vcpuinfo_t *info);

typedef struct xc_cpupoolinfo {
    uint32_t cpupool_id;
    uint32_t sched_id;
    uint32_t n_dom;
    xc_cpumap_t cpumap;
} xc_cpupoolinfo_t;
xc_cpupoolinfo_t *xc_cpupool_getinfo(xc_interface *xch, uint32_t poolid);
int xc_cpupool_create(xc_interface *xch, uint32_t *ppoolid, uint32_t sched_id);
int xc_cpupool_destroy(xc_interface *xch, uint32_t poolid);
int xc_cpupool_addcpu(xc_interface *xch, uint32_t poolid, int cpu);
int xc_cpupool_removecpu(xc_interface *xch, uint32_t poolid, int cpu);
int xc_cpupool_movedomain(xc_interface *xch, uint32_t poolid, uint32_t domid);
xc_cpumap_t xc_cpupool_freeinfo(xc_interface *xch);
#define XC_CPUPOOL_POOLID_ANY ...
void xc_cpupool_infofree(xc_interface *xch, xc_cpupoolinfo_t *info);

#define XEN_SCHEDULER_CREDIT ...
#define XEN_SCHEDULER_CREDIT2 ...
#define XEN_SCHEDULER_ARINC653 ...
#define XEN_SCHEDULER_RTDS ...
#define XEN_SCHEDULER_NULL ...
struct xen_domctl_sched_credit {
    uint16_t weight;
    uint16_t cap;
    ...;
};
struct xen_domctl_sched_credit2 {
    uint16_t weight;
    uint16_t cap;
    ...;
};
int xc_sched_credit_domain_set(xc_interface *xch, uint32_t domid, struct xen_domctl_sched_credit *sdom);
int xc_sched_credit_domain_get(xc_interface *xch, uint32_t domid, struct xen_domctl_sched_credit *sdom);
int xc_sched_credit2_domain_set(xc_interface *xch, uint32_t domid, struct xen_domctl_sched_credit2 *sdom);
int xc_sched_credit2_domain_get(xc_interface *xch, uint32_t domid, struct xen_domctl_sched_credit2 *sdom);
struct xen_sysctl_credit_schedule {
    uint32_t tslice_ms;
    uint32_t ratelimit_us;
    uint32_t vcpu_migr_delay_us;
};
struct xen_sysctl_credit2_schedule {
    uint32_t ratelimit_us;
};
int xc_sched_credit_params_set(xc_interface *xch, uint32_t cpupool_id, struct xen_sysctl_credit_schedule *schedule);
int xc_sched_credit_params_get(xc_interface *xch, uint32_t cpupool_id, struct xen_sysctl_credit_schedule *schedule);
int xc_sched_credit2_params_set(xc_interface *xch, uint32_t cpupool_id, struct xen_sysctl_credit2_schedule *schedule);
int xc_sched_credit2_params_get(xc_interface *xch, uint32_t cpupool_id, struct xen_sysctl_credit2_schedule *schedule);

xc_evtchn_port_or_error_t xc_evtchn_alloc_unbound(xc_interface *xch, uint32_t dom,
                                                  uint32_t remote_dom);
int xc_evtchn_reset(xc_interface *xch, uint32_t dom);
int xc_evtchn_status(xc_interface *xch, xc_evtchn_status_t *status);

int xc_hvm_param_set(xc_interface *handle, uint32_t dom, uint32_t param, uint64_t value);
int xc_hvm_param_get(xc_interface *handle, uint32_t dom, uint32_t param, uint64_t *value);

struct xc_xend_cpuid;
struct xc_msr;
int xc_cpuid_apply_policy(xc_interface *xch, uint32_t domid, bool restore,
                          const uint32_t *featureset, unsigned int nr_features, bool pae,
                          bool itsc, bool nested_virt, const struct xc_xend_cpuid *xend,
                          const struct xc_msr *msr);

/* ---- libxenguest: the domain builder ---- */
struct xc_hvm_firmware_module {
    uint8_t *data;
    uint32_t length;
    uint64_t guest_addr_out;
    ...;
};

struct xc_dom_image {
    void *kernel_blob;
    size_t kernel_size;
    xen_pfn_t console_pfn;
    xen_pfn_t xenstore_pfn;
    xen_pfn_t total_pages;
    unsigned long flags;
    unsigned int console_evtchn;
    unsigned int xenstore_evtchn;
    uint32_t console_domid;
    uint32_t xenstore_domid;
    uint32_t guest_domid;
    int claim_enabled;
    xen_pfn_t target_pages;
    uint64_t mmio_start;
    uint64_t mmio_size;
    uint64_t lowmem_end;
    uint64_t highmem_end;
    xen_pfn_t vga_hole_size;
    bool device_model;
    struct xc_hvm_firmware_module acpi_modules[...];
    struct xc_hvm_firmware_module system_firmware_module;
    unsigned int max_vcpus;
    const char *guest_type;
    ...;
};

struct xc_dom_image *xc_dom_allocate(xc_interface *xch, const char *cmdline, const char *features);
void xc_dom_release(struct xc_dom_image *dom);
int xc_dom_kernel_file(struct xc_dom_image *dom, const char *filename);
int xc_dom_module_file(struct xc_dom_image *dom, const char *filename, const char *cmdline);
int xc_dom_boot_xen_init(struct xc_dom_image *dom, xc_interface *xch, uint32_t domid);
int xc_dom_parse_image(struct xc_dom_image *dom);
int xc_dom_mem_init(struct xc_dom_image *dom, unsigned int mem_mb);
int xc_dom_boot_mem_init(struct xc_dom_image *dom);
int xc_dom_build_image(struct xc_dom_image *dom);
int xc_dom_boot_image(struct xc_dom_image *dom);
int xc_dom_gnttab_init(struct xc_dom_image *dom);
bool xc_dom_translated(const struct xc_dom_image *dom);
void *xc_dom_malloc(struct xc_dom_image *dom, size_t size);

xen_pfn_t xentool_dom_p2m(struct xc_dom_image *dom, xen_pfn_t pfn);
int xentool_dom_set_container(struct xc_dom_image *dom, int hvm);
unsigned int xentool_dom_page_shift(struct xc_dom_image *dom);
int xentool_dom_set_e820(struct xc_dom_image *dom, const struct e820entry *entries, unsigned int n);

/* ---- libxenguest: save and restore (the migration stream, docs/specs/libxc-migration-stream) ---- */
#define XCFLAGS_LIVE ...
typedef enum { XC_STREAM_PLAIN, XC_STREAM_REMUS, XC_STREAM_COLO, ... } xc_stream_type_t;
struct precopy_stats { unsigned int iteration; ...; };
typedef int (*precopy_policy_t)(struct precopy_stats, void *);
struct save_callbacks {
    int (*suspend)(void *data);
    precopy_policy_t precopy_policy;
    int (*postcopy)(void *data);
    int (*checkpoint)(void *data);
    int (*wait_checkpoint)(void *data);
    int (*switch_qemu_logdirty)(uint32_t domid, unsigned enable, void *data); /* HVM only */
    void *data;
    ...;
};
struct restore_callbacks {
    int (*static_data_done)(unsigned int missing, void *data);
    void *data;
    ...;
};
#define XGR_SDD_MISSING_CPUID ...
#define XGR_SDD_MISSING_MSR ...
int xc_domain_save(xc_interface *xch, int io_fd, uint32_t dom, uint32_t flags,
                   struct save_callbacks *callbacks, xc_stream_type_t stream_type, int recv_fd);
int xc_domain_restore(xc_interface *xch, int io_fd, uint32_t dom,
                      unsigned int store_evtchn, unsigned long *store_mfn, uint32_t store_domid,
                      unsigned int console_evtchn, unsigned long *console_mfn, uint32_t console_domid,
                      xc_stream_type_t stream_type, struct restore_callbacks *callbacks, int send_back_fd);
int xc_domain_resume(xc_interface *xch, uint32_t domid, int fast);
/* xc_domain_save asks for the guest to be suspended through this; data is a handle to the Python
   callable (ffi.new_handle). */
extern "Python" int xentool_save_suspend(void *data);
extern "Python" void xentool_progress(const char *doing_what, int percent, unsigned long done, unsigned long total);
extern "Python" int xentool_restore_static_data_done(unsigned int missing, void *data);
/* QEMU's dirty-page logging, which only a live save switches on: xentool's saves are not live. */
extern "Python" int xentool_save_switch_qemu_logdirty(uint32_t domid, unsigned enable, void *data);

/* ---- libxenstore ---- */
struct xs_handle;
typedef uint32_t xs_transaction_t;
#define XBT_NULL ...
#define XS_PERM_NONE ...
#define XS_PERM_READ ...
#define XS_PERM_WRITE ...
#define XS_WATCH_PATH ...
#define XS_WATCH_TOKEN ...

struct xs_permissions {
    unsigned int id;
    unsigned int perms;
};

struct xs_handle *xs_open(unsigned long flags);
void xs_close(struct xs_handle *xsh);
char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *num);
void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len);
bool xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,
              unsigned int len);
bool xs_mkdir(struct xs_handle *h, xs_transaction_t t, const char *path);
bool xs_rm(struct xs_handle *h, xs_transaction_t t, const char *path);
struct xs_permissions *xs_get_permissions(struct xs_handle *h, xs_transaction_t t,
                                          const char *path, unsigned int *num);
bool xs_set_permissions(struct xs_handle *h, xs_transaction_t t, const char *path,
                        struct xs_permissions *perms, unsigned int num_perms);
bool xs_watch(struct xs_handle *h, const char *path, const char *token);
int xs_fileno(struct xs_handle *h);
char **xs_check_watch(struct xs_handle *h);
char **xs_read_watch(struct xs_handle *h, unsigned int *num);
bool xs_unwatch(struct xs_handle *h, const char *path, const char *token);
xs_transaction_t xs_transaction_start(struct xs_handle *h);
bool xs_transaction_end(struct xs_handle *h, xs_transaction_t t, bool abort);
bool xs_introduce_domain(struct xs_handle *h, unsigned int domid, unsigned long mfn,
                         unsigned int eventchn);
bool xs_release_domain(struct xs_handle *h, unsigned int domid);
bool xs_resume_domain(struct xs_handle *h, unsigned int domid);

/* ---- libxenevtchn ---- */
typedef struct xenevtchn_handle xenevtchn_handle;
typedef int xenevtchn_port_or_error_t;
xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);

/* ---- libxengnttab ---- */
typedef struct xengntdev_handle xengnttab_handle;
xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger, unsigned open_flags);
int xengnttab_close(xengnttab_handle *xgt);
void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref, int prot);
int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count);

/* ---- libxenforeignmemory ---- */
typedef struct xenforeignmemory_handle xenforeignmemory_handle;
xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger,
                                               unsigned open_flags);
int xenforeignmemory_close(xenforeignmemory_handle *fmem);
void *xenforeignmemory_map(xenforeignmemory_handle *fmem, uint32_t dom, int prot, size_t pages,
                           const xen_pfn_t arr[], int err[]);
int xenforeignmemory_unmap(xenforeignmemory_handle *fmem, void *addr, size_t pages);
"""


def make_ffi():
    """The FFI object (imported lazily: installing xentool must not need cffi's compiler parts)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(MODULE, SOURCE, libraries=LIBRARIES)
    return ffi


@dataclass(frozen=True)
class Missing:
    """Something the build needs that this machine lacks, and the Debian package that brings it."""

    what: str
    package: str

    def __str__(self) -> str:
        return f"{self.what} (Debian package {self.package})"


def include_dirs() -> list[Path]:
    return [Path("/usr/include"), Path("/usr/local/include")]


def missing_build_prerequisites() -> list[Missing]:
    """What is missing to compile the bindings here: the C compiler, Python.h, Xen's headers."""
    missing: list[Missing] = []
    if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
        missing.append(Missing("a C compiler (gcc)", "gcc"))
    python_include = Path(sysconfig.get_paths()["include"])
    if not (python_include / "Python.h").exists():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        missing.append(Missing(f"Python.h in {python_include}", f"python{version}-dev (or python3-dev)"))
    for header in HEADERS:
        if not any((d / header).exists() for d in include_dirs()):
            missing.append(Missing(f"Xen's header {header}", "libxen-dev"))
    return missing


def compile_bindings(target_dir: Path = PACKAGE_DIR, verbose: bool = False) -> Path:
    """Compile the extension and put it in ``target_dir``; return the path of the module file.

    The C source and object files go to a temporary directory that is removed afterwards; only
    the finished ``_xenlibs*.so`` lands in the package, replaced atomically so that a process that
    has the old one loaded is not disturbed.
    """
    ffi = make_ffi()
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xentool-cffi-") as tmp:
        built = Path(ffi.compile(tmpdir=tmp, verbose=verbose))
        final = target_dir / built.name
        staging = target_dir / (built.name + f".tmp{os.getpid()}")
        shutil.copy2(built, staging)
        os.replace(staging, final)
    return final


if __name__ == "__main__":
    print(compile_bindings(verbose="-v" in sys.argv))
