/* fake fork */
int copy_process(void)
{
	return 0;
}
