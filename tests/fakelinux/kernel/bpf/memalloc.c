/* fake memalloc */
static int unit_size = 8;

int bpf_mem_alloc(void)
{
	return unit_size;
}
